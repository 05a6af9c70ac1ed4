"""What a worker replays calls on (see orion_server/backend.py for the contract).

`cuda` runs them on a GPU; `host` emulates them in host memory for tests on machines
without one. Nothing is imported here, so choosing one never loads the other's
dependencies.
"""
