"""Analytics: usage events counted once, rollups, and the queries over them."""
