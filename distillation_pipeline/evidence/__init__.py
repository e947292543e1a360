"""Stage ``collect``: source rows in ``data/_kb/`` become EvidenceRecords with provenance."""
