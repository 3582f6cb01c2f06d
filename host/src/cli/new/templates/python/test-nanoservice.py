"""`python3 -m unittest test_logic`: the logic's tests (platform calls only work in the host)."""

import unittest

from logic import greet


class LogicTest(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(greet("hello", "Ada", "/x"), "hello, Ada! you asked for /x\n")


if __name__ == "__main__":
    unittest.main()
