"""The benchmark of a study against its limits: `python -m study.bench` (commands and parts: study.bench.cli).

- settings: what one run measures (Settings), the presets (--quick, --smoke, the full sizes), their checks
- cli: the command line (the commands, every flag) and main, which runs the parts and reports
- common: the Bench (figures, details), the goals, the table, the JSON report, the machine, the
  studies run as a user runs them (`python -m study.run` in a subprocess)
- data, trainable, orchestration, search, storage: one module per part, each with its bench_<part>
"""
