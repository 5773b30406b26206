"""Reading InfluxDB back to judge the site: `faults` (panel statistics and the rules that compare
peers), `nodes` (the weak-node report) and `rollup` (downsampled history). May import the floor and
`identity`, nothing else.
"""
