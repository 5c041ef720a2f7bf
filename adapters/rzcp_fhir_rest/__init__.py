"""RZCP's FHIR REST member adapter, registered as `fhir-rest` in the entry-point group `rzcp.adapters`."""

from __future__ import annotations

from rzcp.exchange.adapters import AdapterContext
from rzcp_fhir_rest.adapter import FhirRestAdapter

__all__ = ["FhirRestAdapter", "create"]


def create(context: AdapterContext) -> FhirRestAdapter:
    """The entry point's factory: one adapter per process, sharing the context's HTTP client."""
    return FhirRestAdapter(context)
