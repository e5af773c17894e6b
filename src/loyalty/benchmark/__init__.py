"""The benchmark behind `loyalty bench` / `make bench`: the server as a user runs it, loaded over real HTTP by a
generator in another process, every figure reported next to the raw store ceiling measured in the same run."""
