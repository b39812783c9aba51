"""Qt widgets and Qt item models of the Spoolside window."""
