"""The operator's pure planning, one test module per planning module: plain values in,
plain values out; no cluster, no Redis, nothing faked."""
