"""pytest hooks only: the suite is absltest classes, their shared helpers are in tests/support.py."""


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase's inherited `test_session` (a context manager, not a test)."""
  del config
  items[:] = [item for item in items if item.name != "test_session"]
