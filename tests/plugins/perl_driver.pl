#!/usr/bin/perl
# A libnetwork remote IPAM *and* network driver, written from the protocol notes
# (docker-protocols.md, part A) and the recorded fixtures, not from ferry's code nor from
# the Python seed plugin: a second, independent reading of the contract. Perl core modules
# only; it shells out to `ip` for its links, as such plugins do.
#
# Usage: perl_driver.pl SOCKET LOG [FAILFILE]
# IPAM: hands out 10.66.0.0/24 when asked for no pool (gateway .1, addresses from .10 up,
# so a test can tell its choice from ferry's), any requested /24 otherwise.
# Network: a bridge of its own per network ("pl" + 10 characters of the network ID) with
# the gateway from IPv4Data on it; per endpoint a veth pair ("pv…" on the bridge, "pc…"
# handed over in Join, with the gateway); a MAC of its choosing (02:50 + 4 bytes of the
# endpoint ID) when the daemon left it empty.
# Each call is appended to LOG as one JSON line {"call": ..., "body": ...}; while
# FAILFILE exists, the method named in it answers with its role's error key.
use strict;
use warnings;
use IO::Socket::UNIX;
use JSON::PP;

my ($sock_path, $log, $failfile) = @ARGV;
my $json = JSON::PP->new->canonical;
unlink $sock_path;
my $server = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $sock_path, Listen => 16)
    or die "listen $sock_path: $!";
my %pools;    # PoolID -> { net => "a.b.c", len => N, used => { ip => 1 } }

sub note {
    my ($entry) = @_;
    open(my $fh, '>>', $log) or die "log: $!";
    print $fh $json->encode($entry), "\n";
    close $fh;
}
note({ ready => JSON::PP::true });

sub answer {
    my ($method, $body) = @_;
    if ($failfile && -e $failfile) {
        open(my $fh, '<', $failfile); my $m = <$fh> // ''; close $fh; chomp $m;
        # The success-with-error key is Err for a network driver, Error for IPAM.
        my $key = $method =~ /^NetworkDriver/ ? 'Err' : 'Error';
        return { $key => "refused by test" } if $m eq $method;
    }
    return { Implements => ['IpamDriver', 'NetworkDriver'] } if $method eq 'Plugin.Activate';
    return network($method, $body) if $method =~ /^NetworkDriver\./;
    return { RequiresMACAddress => JSON::PP::true, RequiresRequestReplay => JSON::PP::false }
        if $method eq 'IpamDriver.GetCapabilities';
    return { LocalDefaultAddressSpace => 'PerlLocal', GlobalDefaultAddressSpace => 'PerlGlobal' }
        if $method eq 'IpamDriver.GetDefaultAddressSpaces';
    if ($method eq 'IpamDriver.RequestPool') {
        my $pool = $body->{Pool} || '10.66.0.0/24';
        my ($net, $len) = $pool =~ m{^(\d+\.\d+\.\d+)\.\d+/(\d+)$}
            or return { Error => "only /24 pools here, not $pool" };
        my $id = "PerlLocal/$net.0/$len";
        $pools{$id} = { net => $net, len => $len, used => {} };
        return { PoolID => $id, Pool => "$net.0/$len", Data => {} };
    }
    if ($method eq 'IpamDriver.RequestAddress') {
        my $p = $pools{ $body->{PoolID} } or return { Error => "no pool $body->{PoolID}" };
        my $type = ($body->{Options} // {})->{RequestAddressType} // '';
        my $want = $body->{Address} // '';
        if ($want eq '') {
            if ($type eq 'com.docker.network.gateway') { $want = "$p->{net}.1" }
            else {
                for my $i (10 .. 254) {
                    next if $p->{used}{"$p->{net}.$i"};
                    $want = "$p->{net}.$i";
                    last;
                }
            }
        }
        return { Error => "$want is in use" } if $p->{used}{$want};
        $p->{used}{$want} = 1;
        return { Address => "$want/$p->{len}", Data => {} };
    }
    if ($method eq 'IpamDriver.ReleaseAddress') {
        my $p = $pools{ $body->{PoolID} } or return {};
        delete $p->{used}{ $body->{Address} };
        return {};
    }
    if ($method eq 'IpamDriver.ReleasePool') {
        delete $pools{ $body->{PoolID} };
        return {};
    }
    return undef;
}

my %networks;    # NetworkID -> { bridge => name, gateway => "a.b.c.d" }

sub ip { return system('ip', @_) == 0 }

sub network {
    my ($method, $body) = @_;
    my ($nid, $eid) = ($body->{NetworkID} // '', $body->{EndpointID} // '');
    my ($host_end, $peer_end) = ('pv' . substr($eid, 0, 10), 'pc' . substr($eid, 0, 10));
    return { Scope => 'local', ConnectivityScope => 'local' } if $method =~ /GetCapabilities$/;
    if ($method =~ /\.CreateNetwork$/) {
        my $gw = (($body->{IPv4Data} // [])->[0] // {})->{Gateway}
            or return { Err => 'no IPv4 gateway in IPv4Data' };
        my $br = 'pl' . substr($nid, 0, 10);
        ip('link', 'add', $br, 'type', 'bridge') && ip('addr', 'add', $gw, 'dev', $br)
            && ip('link', 'set', $br, 'up')
            or do { ip('link', 'del', $br); return { Err => "cannot make bridge $br" } };
        $networks{$nid} = { bridge => $br, gateway => (split m{/}, $gw)[0] };
        return {};
    }
    if ($method =~ /\.DeleteNetwork$/) {
        my $n = delete $networks{$nid};
        ip('link', 'del', $n->{bridge}) if $n;
        return {};
    }
    if ($method =~ /\.CreateEndpoint$/) {
        return { Err => "no network $nid" } unless $networks{$nid};
        my $iface = $body->{Interface} // {};
        return { Interface => {} } if ($iface->{MacAddress} // '') ne '';
        my @b = map { hex } unpack('(A2)4', $eid);
        return { Interface => { MacAddress => sprintf('02:50:%02x:%02x:%02x:%02x', @b) } };
    }
    if ($method =~ /\.Join$/) {
        my $n = $networks{$nid} or return { Err => "no network $nid" };
        ip('link', 'add', $host_end, 'type', 'veth', 'peer', 'name', $peer_end)
            && ip('link', 'set', $host_end, 'master', $n->{bridge})
            && ip('link', 'set', $host_end, 'up')
            or do { ip('link', 'del', $host_end); return { Err => "cannot make $host_end" } };
        return { InterfaceName => { SrcName => $peer_end, DstPrefix => 'eth' },
                 Gateway => $n->{gateway} };
    }
    if ($method =~ /\.DeleteEndpoint$/) {
        ip('link', 'del', $host_end);
        return {};
    }
    return { Value => {} } if $method =~ /\.EndpointOperInfo$/;
    # Leave, Program/RevokeExternalConnectivity, DiscoverNew/Delete: nothing to do here.
    return {};
}

while (my $c = $server->accept) {
    my ($line, %h) = (scalar <$c>);
    next unless defined $line;
    my ($path) = $line =~ m{^POST /(\S+) HTTP};
    while (my $hl = <$c>) {
        last if $hl =~ /^\r?\n$/;
        $h{ lc $1 } = $2 if $hl =~ /^([^:]+):\s*(.*?)\r?\n$/;
    }
    my $raw = '';
    read($c, $raw, $h{'content-length'}) if $h{'content-length'};
    my $body = $raw =~ /\S/ ? $json->decode($raw) : undef;
    note({ call => $path, body => $body });
    my $ans = answer($path // '', $body // {});
    my ($status, $out) = defined $ans ? ('200 OK', $json->encode($ans)) : ('404 Not Found', '404 page not found');
    print $c "HTTP/1.1 $status\r\nContent-Length: " . length($out) . "\r\nConnection: close\r\n\r\n$out";
    close $c;
}
