//! resource registry, selectors, status errors and object helpers shared by the server side
