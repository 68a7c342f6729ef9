"""The peers' own test suites, run against multicore (see each package)."""
