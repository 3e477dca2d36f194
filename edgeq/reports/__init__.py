"""Reports on artifacts, reached through the target registry (edgeq.targets): error against the float model
(compare.py), one integer semantics across runtimes (verify.py), latency, memory and static analysis
(profile.py), and the self-contained HTML page (page.py builds its data, html.py renders it)."""
