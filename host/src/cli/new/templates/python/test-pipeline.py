"""`python3 -m unittest test_logic`: the logic's tests (platform calls only work in the host)."""

import unittest

from logic import transform


class LogicTest(unittest.TestCase):
    def test_upper_cases(self):
        self.assertEqual(transform("abc"), "ABC")


if __name__ == "__main__":
    unittest.main()
