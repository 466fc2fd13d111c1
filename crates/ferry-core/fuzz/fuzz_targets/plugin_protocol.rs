//! The Docker plugin protocol's request bodies, as ferryd's plugin socket decodes them,
//! then the pure checks ferryd runs on them: any bytes give a value or an error, never a
//! panic. The first byte picks the call; the rest is its JSON body. An address that
//! parses is printed and parsed back to itself.
#![no_main]

use ferry_core::docker::plugin::{
    check_id, flag_option, generic_options, parse_addr, parse_cidr_addr, parse_mac, portmap,
    CreateEndpointRequest, CreateNetworkRequest, JoinRequest, ProgramExternalRequest,
    ReleaseAddressRequest, RequestAddressRequest, RequestPoolRequest,
};
use libfuzzer_sys::fuzz_target;

fn create_network(body: &[u8]) {
    let Ok(r) = serde_json::from_slice::<CreateNetworkRequest>(body) else {
        return;
    };
    let _ = check_id("network ID", &r.network_id);
    let _ = generic_options(r.options.as_ref());
    let _ = flag_option(r.options.as_ref(), "com.docker.network.internal");
    for d in r.ipv4_data.iter().flatten() {
        if let Ok(n) = parse_cidr_addr("pool", &d.pool) {
            assert_eq!(parse_cidr_addr("pool", &n.to_string()), Ok(n));
        }
        let _ = parse_cidr_addr("gateway", &d.gateway);
    }
}

fn create_endpoint(body: &[u8]) {
    let Ok(r) = serde_json::from_slice::<CreateEndpointRequest>(body) else {
        return;
    };
    let _ = check_id("endpoint ID", &r.endpoint_id);
    let _ = portmap(r.options.as_ref());
    if let Some(i) = &r.interface {
        let _ = parse_cidr_addr("address", &i.address);
        if let Ok(mac) = parse_mac(&i.mac_address) {
            let s = ferry_core::model::mac_string(&mac);
            assert_eq!(parse_mac(&s), Ok(mac), "a MAC prints and parses back");
        }
    }
}

fn addresses(body: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<RequestAddressRequest>(body) {
        if let Ok(ip) = parse_addr("address", &r.address) {
            assert_eq!(parse_addr("address", &ip.to_string()), Ok(ip));
        }
    }
    if let Ok(r) = serde_json::from_slice::<ReleaseAddressRequest>(body) {
        let _ = parse_addr("address", &r.address);
    }
    if let Ok(r) = serde_json::from_slice::<RequestPoolRequest>(body) {
        let _ = ferry_core::validate::usable_subnet(&r.pool, &[]);
    }
}

fn join_and_publish(body: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<JoinRequest>(body) {
        let _ = portmap(r.options.as_ref());
    }
    if let Ok(r) = serde_json::from_slice::<ProgramExternalRequest>(body) {
        if let Ok(maps) = portmap(r.options.as_ref()) {
            let _ = ferry_core::ports::decide(&maps, &[]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => create_network(body),
        1 => create_endpoint(body),
        2 => addresses(body),
        _ => join_and_publish(body),
    }
});
