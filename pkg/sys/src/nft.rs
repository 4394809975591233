//! nftables through the nft binary's JSON interface, behind a trait (being written).
