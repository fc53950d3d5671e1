#!/usr/bin/perl
# A consumer of the two-host harness written the way docs/dirqueue.md shows: the real IPC::DirQueue,
# pickup_queued_job() and finish(). Each job's message is copied to OUT_DIR/JOBID (a second copy of one id would
# get a suffix, so nothing consumed twice is hidden), then the job is finished. Exits once STOP_FILE exists and
# nothing is left to pick up.
# Usage: perl -I LIB perl-consumer.pl QUEUE_DIR OUT_DIR STOP_FILE
use strict;
use warnings;
use IPC::DirQueue;

my ($queue, $out, $stop) = @ARGV;
die "usage: perl-consumer.pl QUEUE_DIR OUT_DIR STOP_FILE\n" unless defined $stop;
my $dq = IPC::DirQueue->new({ dir => $queue });
while (1) {
  my $job = $dq->pickup_queued_job();
  if (!$job) {
    last if -e $stop;
    select(undef, undef, undef, 0.05);
    next;
  }
  my $path = $job->get_data_path();
  open(my $in, '<:raw', $path) or die "cannot read $path: $!\n";
  my $data = do { local $/; <$in> };
  close($in);
  my $name = "$out/$job->{jobid}";
  my $n = 0;
  $name = "$out/$job->{jobid}.copy" . ++$n while -e $name;
  # Written aside and renamed, so a reader never sees half a copy.
  open(my $o, '>:raw', "$name.part") or die "cannot write $name.part: $!\n";
  print $o $data;
  close($o) or die "cannot write $name.part: $!\n";
  rename("$name.part", $name) or die "cannot rename $name.part: $!\n";
  $job->finish();
}
