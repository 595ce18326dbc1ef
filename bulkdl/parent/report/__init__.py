"""What people and machines read: live progress, the summary, the JSON report. The only rich importers."""
