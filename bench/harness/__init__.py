"""The benchmark harness: processes pinned to cores, the stack under test, load, and reports.

core.py     run environment (machine, versions, commit), records, pinning, CPU and RSS readings
procs.py    child processes (`lockstep serve`, the simulator) and their failure reports
stack.py    a server + simulator stack in separate processes, devices attached
streams.py  stream keys, devices and channels of a scenario; final-state checks
loadgen.py  the open-loop HTTP load generator
report.py   the rich tables printed after a run
"""
