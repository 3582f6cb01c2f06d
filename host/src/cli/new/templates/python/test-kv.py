"""`python3 -m unittest test_logic`: the logic's tests (platform calls only work in the host)."""

import unittest

from logic import key_of


class LogicTest(unittest.TestCase):
    def test_routes_name_keys(self):
        self.assertEqual(key_of("/visits"), "visits")
        self.assertIsNone(key_of("/"))


if __name__ == "__main__":
    unittest.main()
