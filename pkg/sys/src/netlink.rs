//! Netlink (links, addresses, routes, neighbours, FDB) behind a trait (being written).
