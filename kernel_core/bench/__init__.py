"""``kernel-core bench``: time every kernel that can serve a layer against the baselines a user
would pick instead, over an M sweep. Modules: :mod:`.presets` (model layer shapes),
:mod:`.timing` (how one call is timed), :mod:`.runner` (what is timed and the report),
:mod:`.progress` (the stderr progress bar), :mod:`.plot` (speedup plots)."""
