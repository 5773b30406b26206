"""The health instance's jobs: `watchdog` (staleness and faults as OK/WARN/CRIT), its automatic
heal and `heal` (the journal written back into InfluxDB), and `homeassistant` (MQTT discovery).
May import the floor, `analysis` and `identity`.
"""
