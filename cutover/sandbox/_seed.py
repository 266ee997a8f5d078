def seed(*a, **k): pass
class SeedReport: pass
class MailboxSeed: pass
