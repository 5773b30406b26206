"""Setting up a site: `doctor`'s checks and what only they need (Telegraf's config rules, the MQTT
credentials probe). May import anything; nothing imports it.
"""
