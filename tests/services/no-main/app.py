"""Code without __main__.py: deploying this folder must be refused with a clear message."""

print("never run")
