"""Review: people decide the mined pairs, one keystroke each, without overwriting each other.

``decisions`` (approve, reject, swap, pick, edit, undo — each against the version the reviewer saw,
overrides audited), ``queue`` (filters, leases, what the pane shows), ``agreement`` (progress,
judge–human and reviewer–reviewer agreement, second reviews, bulk decisions) and ``browse`` (the
candidate browser's queries).
"""
