"""Multi-host tests: several hosts on this machine (network + mount namespaces), see hosts.py."""
