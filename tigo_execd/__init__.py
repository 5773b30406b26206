"""tigo-execd: Tigo TS4 optimizer data from taptap into Telegraf as line protocol."""

__version__ = "0.2.0"
