"""Which Kazoo accounts a principal may see: the account scope every face applies to account rows
(scope.py), and the scoped API tokens that carry one (models.py, services.py)."""
