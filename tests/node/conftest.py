"""The Node package's installed files are not Python tests."""

collect_ignore_glob = ["node_modules/*"]
