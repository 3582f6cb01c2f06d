"""`python3 -m unittest test_logic`: the logic's tests (WASI calls only work in the host)."""

import unittest

from logic import answer


class LogicTest(unittest.TestCase):
    def test_says_what_was_asked(self):
        self.assertEqual(answer("web", "GET", "/x"), "hello from web! you asked for GET /x\n")


if __name__ == "__main__":
    unittest.main()
