#!/bin/bash
# OpenIPMI ipmi_sim chassis control program for the test BMCs:
#   chassis_control.sh STATEFILE DELAY MCADDR get|set|check ARGS...
# ipmi_sim rejects power commands without such a program ("Invalid data field
# in request"). The power bit lives in STATEFILE ("1" on, "0" off). With
# DELAY > 0 a power change takes effect DELAY seconds after the request, like
# a slow BMC; reads return the old state until then. Every power request is
# appended to STATEFILE.requests (one line: the requested bit), so a test can
# count them, and every change of the power bit to STATEFILE.changes (the bit
# and when, in epoch seconds), so it can tell when the host really went off.
state=$1; delay=$2; shift 2; shift; op=$1; shift
[ -f "$state" ] || echo 1 > "$state"
case $op in
  get)
    for p in "$@"; do
      case $p in
        power) echo "power:$(cat "$state")" ;;
        boot)  echo "boot:default" ;;
      esac
    done ;;
  set)
    while [ $# -gt 0 ]; do
      p=$1; v=$2; shift 2
      if [ "$p" = power ]; then
        echo "$v" >> "$state.requests"
        if [ "$delay" = 0 ]; then
          echo "$v" > "$state"; echo "$v $(date +%s.%N)" >> "$state.changes"
        else
          # the delayed writer must not keep ipmi_sim's UDP socket open
          (for fd in /proc/"$BASHPID"/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done
           sleep "$delay"; echo "$v" > "$state"
           echo "$v $(date +%s.%N)" >> "$state.changes") > /dev/null 2>&1 &
        fi
      fi
    done ;;
  check) : ;;
esac
exit 0
