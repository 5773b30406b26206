"""Who each node is: the registry (addresses, barcodes, names), barcode <-> address
(`tigo-execd barcode`), and store.py, the state file and names file that keep them across restarts.
Imports only the floor.
"""
