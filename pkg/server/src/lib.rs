//! mini server: loads config, ensures pki, opens the store and runs the api server
