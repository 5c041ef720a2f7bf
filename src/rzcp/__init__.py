"""RZCP, the Regionaal Zorgcommunicatie Platform: a FHIR R4 gateway for one Dutch care region."""

__version__ = "0.1.0"
