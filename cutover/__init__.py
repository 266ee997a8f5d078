"""pec-cutover core library: plan, inventory, secrets, mail copy, ledger, DNS bridge, sandbox, CLI.

Imports neither ``flows`` nor Prefect (see docs/design.md).
"""

__version__ = "0.1.0"
