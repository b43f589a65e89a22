"""Software-defined assets, one module per asset (the scan's four tables: ``activation_scan``)."""
