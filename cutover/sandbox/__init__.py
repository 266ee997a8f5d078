"""The sandbox: real servers on 127.0.0.1 for rehearsals and tests (docs/design.md, The sandbox).

Two Dovecots ("aruba" source, "infocert" target), a BIND9 primary + secondary for the zone with a TSIG
key, an unbound caching resolver and an nginx HTTPS webmail page, all under ``plan.sandbox.state_dir``.
With the plan's surroundings also: each Dovecot's submission service and the MTA behind them (delivering by
LMTP), the PEC clients' Postfix relay and a reader standing for the organisation's document-management system.
"""

from cutover.sandbox._ca import CertKind, CertPair, SandboxCA
from cutover.sandbox._environment import Environment, SandboxPorts, free_base_port, mailbox_locals, write_environment
from cutover.sandbox._process import established_connections, peak_connections
from cutover.sandbox._sandbox import ADMIN_USER, OPTIONAL_SERVICES, SERVICE_NAMES, Sandbox, ServiceStatus
from cutover.sandbox._seed import MailboxSeed, SeedReport, seed

__all__ = ["Sandbox", "ServiceStatus", "SERVICE_NAMES", "OPTIONAL_SERVICES", "ADMIN_USER", "SandboxCA", "CertPair", "CertKind",
           "write_environment", "free_base_port", "Environment", "SandboxPorts", "mailbox_locals", "seed", "SeedReport", "MailboxSeed",
           "established_connections", "peak_connections"]
