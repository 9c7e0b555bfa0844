"""The article's commands: train one run, compare the schemes over seeds, decide its
claims, and the figures and checks read from a compare directory."""
