"""Test seams: hooks that let the test suite drive a real gateway into states no
configuration can reach. Each is off unless its own environment switch holds one exact
value, and announces itself (log, banner, metric) when on. Nothing else imports this
package except the part of `serve` that mounts a seam's admin routes."""
