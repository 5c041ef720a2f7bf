"""Simulated member organisations: each its own FHIR server on the foundation, with its own database and
port, loaded with the Synthea and nl-core patients given Dutch test BSNs (`rzcp member-sim`, the demo and
the tests). `loader.load_member_data` loads without the CLI; `server.create_member_app` builds the app."""
