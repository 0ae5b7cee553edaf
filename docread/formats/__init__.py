"""Data formats that both `docread.bench` and `docread.train` read: one home for each file format."""
