"""GPU quota: policies (who may have how much), the ledger (what was granted, used and
decided) and atomic admission. Built by issue #3; see the modules for what exists."""
