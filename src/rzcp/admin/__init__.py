"""The administrators' console's backend: the `/admin/api` JSON API (docs/admin-api.md).

Admins manage members and clients and watch the exchange's health; auditors search, open and export the
audit trail, run its verification and see the exchange in charts. Every call is itself audited."""
