#!/usr/bin/perl
# A small RESP client for the Redis tests, binary-safe where redis-cli is not.
# The default user's password, if any, comes from REDIS_TOOL_AUTH.
#
#   fill PORT DB PREFIX LABEL   every type under PREFIX: a "LABEL canary" string, a hash,
#                               list, set, sorted set, stream, a binary key and value,
#                               keys with TTLs (1 h, 10 min)
#   many PORT DB PREFIX N [SIZE [noise]]  N string keys PREFIXk<i> of SIZE bytes (default 16),
#                               pipelined; with noise, values that nothing compresses
#   snapshot PORT DB PREFIX     one line per key beginning with PREFIX, sorted: the key
#                               without PREFIX (hex), its type, SHA-1 of its value (every
#                               member, field, element and entry; sets and hashes sorted),
#                               the time it expires in ms since the epoch (-1: never)
#   compare A B                 two snapshots equal but for expiry times within 1000 ms
#   cmd PORT DB ARG...          one command; prints the reply
use strict;
use warnings;
use IO::Socket::INET;
use Digest::SHA qw(sha1_hex sha512);
use Time::HiRes qw(time);

sub connect_db {
	my ($port, $db) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
		or die "connect 127.0.0.1:$port: $!\n";
	binmode $s;
	call($s, 'AUTH', $ENV{REDIS_TOOL_AUTH}) if defined $ENV{REDIS_TOOL_AUTH};
	call($s, 'SELECT', $db) if $db;
	return $s;
}

sub encode { return '*' . scalar(@_) . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @_); }

sub reply {
	my ($s) = @_;
	my $line = <$s>;
	die "connection closed\n" unless defined $line;
	$line =~ s/\r\n$//;
	my ($t, $rest) = (substr($line, 0, 1), substr($line, 1));
	return $rest if $t eq '+';
	die "server error: $rest\n" if $t eq '-';
	return $rest + 0 if $t eq ':';
	if ($t eq '$') {
		return undef if $rest < 0;
		my $buf = '';
		while (length($buf) < $rest + 2) { read($s, $buf, $rest + 2 - length($buf), length($buf)) or die "short read\n"; }
		return substr($buf, 0, $rest);
	}
	if ($t eq '*') {
		return undef if $rest < 0;
		return [map { reply($s) } 1 .. $rest];
	}
	die "unexpected reply '$line'\n";
}

sub call { my $s = shift; print $s encode(@_); return reply($s); }

sub fill {
	my ($s, $p, $label) = @_;
	call($s, 'SET', "${p}canary", "$label canary");
	call($s, 'HSET', "${p}hash", 'f1', 'v1', 'f2', "bin\x00\xff", 'n', '42');
	call($s, 'RPUSH', "${p}list", 'a', 'b', "c\r\n", 'a');
	call($s, 'SADD', "${p}set", 'x', 'y', "z\x00");
	call($s, 'ZADD', "${p}zset", '1.5', 'one', '-2', 'two', 'inf', 'top');
	call($s, 'XADD', "${p}stream", '1-1', 'temp', '21.5');
	call($s, 'XADD', "${p}stream", '2-0', 'temp', '22', 'who', $label);
	call($s, 'SET', "${p}bin\x00\xff\r\n*?[", join('', map { chr } 0 .. 255) x 3);
	call($s, 'SET', "${p}ttl:hour", 'soon gone', 'EX', 3600);
	call($s, 'HSET', "${p}ttl:hash", 'f', 'v');
	call($s, 'PEXPIRE', "${p}ttl:hash", 600000);
	call($s, 'SET', "${p}counter", 12345);
	call($s, 'SET', "${p}big", 'x' x 100000);
}

# SIZE bytes of SHA-512 output seeded by the key: the same every run, incompressible.
sub noise {
	my ($seed, $size) = @_;
	return substr(join('', map { sha512("$seed:$_") } 0 .. $size / 64), 0, $size);
}

sub many {
	my ($s, $p, $n, $size, $noise) = @_;
	my $value = 'v' x ($size // 16);
	for (my $i = 0; $i < $n; $i += 1000) {
		my $last = $i + 1000 < $n ? $i + 1000 : $n;
		print $s join('', map { encode('SET', "${p}k$_", $noise ? noise("$p$_", $size) : $value) } $i .. $last - 1);
		reply($s) for $i .. $last - 1;
	}
}

sub snapshot {
	my ($s, $p) = @_;
	my ($cursor, %seen) = ('0');
	(my $pattern = $p) =~ s/([*?\[\]\\])/\\$1/g;
	do {
		my $r = call($s, 'SCAN', $cursor, 'MATCH', "$pattern*", 'COUNT', 1000);
		$cursor = $r->[0];
		$seen{$_} = 1 for grep { substr($_, 0, length $p) eq $p } @{$r->[1]};
	} while ($cursor ne '0');
	my @keys = sort keys %seen;
	while (my @batch = splice(@keys, 0, 1000)) {
		print $s join('', map { encode('TYPE', $_) } @batch);
		my @types = map { reply($s) } @batch;
		print $s join('', map { encode(value_command($types[$_], $batch[$_])) . encode('PTTL', $batch[$_]) } 0 .. $#batch);
		for my $i (0 .. $#batch) {
			my ($value, $pttl) = (reply($s), reply($s));
			next if $pttl == -2;
			printf "%s %s %s %d\n", unpack('H*', substr($batch[$i], length $p)), $types[$i],
				sha1_hex(value_text($types[$i], $value)), $pttl < 0 ? -1 : int(time() * 1000) + $pttl;
		}
	}
}

# The command that reads a whole value of a type.
sub value_command {
	my ($type, $k) = @_;
	my %command = (string => ['GET'], list => ['LRANGE', 0, -1], set => ['SMEMBERS'], hash => ['HGETALL'],
		zset => ['ZRANGE', 0, -1, 'WITHSCORES'], stream => ['XRANGE', '-', '+']);
	die "no value for type $type\n" unless $command{$type};
	my ($name, @args) = @{$command{$type}};
	return ($name, $k, @args);
}

# A value as text that two equal values share whatever their encoding (sets and hashes sorted).
sub value_text {
	my ($type, $value) = @_;
	my $flat = sub { join("\0", map { ref $_ ? '[' . join("\0", map { ref $_ ? join("\0", @$_) : $_ } @$_) . ']' : $_ } @_) };
	return $value if $type eq 'string';
	return $flat->(sort @$value) if $type eq 'set';
	if ($type eq 'hash') {
		my %h = @$value;
		return $flat->(map { ($_, $h{$_}) } sort keys %h);
	}
	return $flat->(@$value);
}

sub compare {
	my ($fa, $fb) = @_;
	my (@a, @b, $bad);
	open(my $ha, '<', $fa) or die "$fa: $!\n";
	open(my $hb, '<', $fb) or die "$fb: $!\n";
	@a = <$ha>;
	@b = <$hb>;
	if (@a != @b) { print "key count differs: ", scalar(@a), " vs ", scalar(@b), "\n"; $bad = 1; }
	for my $i (0 .. ($#a < $#b ? $#a : $#b)) {
		my @x = split ' ', $a[$i];
		my @y = split ' ', $b[$i];
		if ($x[0] ne $y[0] || $x[1] ne $y[1] || $x[2] ne $y[2]) { print "differs: $a[$i]     vs $b[$i]"; $bad = 1; next; }
		if (($x[3] < 0) != ($y[3] < 0) || abs($x[3] - $y[3]) > 1000) { print "TTL differs: $a[$i]     vs $b[$i]"; $bad = 1; }
	}
	exit($bad ? 1 : 0);
}

my $what = shift @ARGV // '';
if ($what eq 'compare') { compare(@ARGV); }
my ($port, $db) = (shift @ARGV, shift @ARGV);
die "usage: redis_tool.pl fill|many|snapshot|compare|cmd ...\n" unless defined $db;
my $s = connect_db($port, $db);
if ($what eq 'fill') { fill($s, @ARGV); }
elsif ($what eq 'many') { many($s, @ARGV); }
elsif ($what eq 'snapshot') { snapshot($s, @ARGV); }
elsif ($what eq 'cmd') {
	my $r = call($s, @ARGV);
	print ref $r ? join("\n", map { $_ // '' } @$r) : $r // '', "\n";
}
else { die "unknown command '$what'\n"; }
