"""`lockstep replay`: recorded API traffic re-issued against a server, then checked on the devices.

cli.py    the command (and `--pushes` replays through fresh simulated iPhones)
run.py    open-loop replay with recorded spacing; per-stream ordering; the report
check.py  the final-state check of every stream and activity on the simulated devices
http.py   a small keep-alive HTTP/1.1 client pool
"""
