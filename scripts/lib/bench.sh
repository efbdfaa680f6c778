# bench.sh: what every scripts/bench.d/* benchmark shares (sourced, not run).

# The median of the numbers on stdin, one per line: the middle one, or the
# mean of the two middle ones; "nan" when there are none.
median() {
  sort -g | awk '{a[NR] = $1} END {
    if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
