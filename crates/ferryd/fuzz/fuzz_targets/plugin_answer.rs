//! What a third-party plugin answers, as ferryd's plughost reads it: any status and
//! body through `decode` (dockerd's rules: 404 is "not implemented", another non-200 a
//! refusal, a 200 the answer unless it carries the role's error key), then, for a
//! network driver's answer, `read_join` and `read_created`. Properties: no panic; the
//! status alone decides 404 and non-200; what `read_join` accepts is usable (a link
//! name the kernel takes, a prefix, parsed routes); a MAC `read_created` accepts is
//! the one the answer spelled.
#![no_main]

use ferry_core::IfName;
use ferryd::plughost::answers::{read_created, read_join};
use ferryd::plughost::client::{decode, Addr, Reply};
use ferryd::plughost::{Found, Plugin, PluginError};
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 5] = [200, 200, 404, 500, 400];

fn plugin() -> Plugin {
    Plugin {
        found: Found {
            name: "fz".into(),
            addr: Addr::parse("unix:///nonexistent/fz.sock").expect("an address"),
            source: "/nonexistent/fz.spec".into(),
        },
        implements: vec!["NetworkDriver".into(), "IpamDriver".into()],
        address_space: String::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(kind) % STATUSES.len()];
    let err_key = if kind & 0x80 == 0 { "Err" } else { "Error" };
    let reply = Reply {
        status,
        body: hyper::body::Bytes::copy_from_slice(body),
    };
    let decoded = decode("fz", "NetworkDriver.Join", reply, err_key);
    match status {
        404 => assert!(matches!(decoded, Err(PluginError::NotImplemented { .. }))),
        200 => {}
        _ => assert!(matches!(decoded, Err(PluginError::Refused { .. }))),
    }
    let Ok(v) = decoded else { return };
    let p = plugin();
    if let Ok(j) = read_join(&p, &v) {
        assert!(IfName::new(j.src.clone()).is_ok(), "accepted SrcName {:?}", j.src);
        assert!(!j.prefix.is_empty(), "an empty DstPrefix was kept");
        assert_eq!(j.routes.len() <= v["StaticRoutes"].as_array().map_or(0, Vec::len), true);
    }
    let sent = "10.1.0.2/24".parse().expect("a CIDR");
    if let Ok(Some(mac)) = read_created(&p, &v, sent) {
        let spelled = v["Interface"]["MacAddress"].as_str().unwrap_or_default();
        let bytes: Vec<u8> = spelled
            .split(':')
            .map(|x| u8::from_str_radix(x, 16).expect("accepted hex"))
            .collect();
        assert_eq!(bytes, mac, "the MAC read is not the one spelled {spelled:?}");
    }
});
