"""Sandbox backends and the image definitions of each env family; installed as `agentsd.sandboxes`.

`base` holds the Sandbox protocol and what every backend shares; `local` runs a bubblewrap namespace
sandbox on this host, `docker_sandbox` a container on a Docker engine; both talk to the in-sandbox
`supervisor` over `channel`. `fleet` picks a backend from the config and limits how many run at
once; `reaper` removes what a dead owner left behind. `images/` holds the Dockerfiles (also
interpreted for the local backend by `local_build`).
"""
