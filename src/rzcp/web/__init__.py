"""The patient app (`/app/`) and the administrators' console (`/admin/`): static pages that call the
gateway's public APIs with a token got through the authorize endpoint, as any third-party app would."""
