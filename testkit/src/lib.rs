//! Real servers for Millrace's tests, each on a free loopback port in its own
//! temporary directory, stopped (and its files removed) when dropped.
