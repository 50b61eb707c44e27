#!/bin/bash
# An ASHS-style service script, run by the engine as: ashs_style.sh TICKET WORKDIR WORKSPACE
# RESULT LABELS. Reports chained on one itksnap-wt line, the workspace found by grepping the
# download listing, labels renamed on the way in, hook progress, the result uploaded by
# the script itself.
set -e
TICKET=$1 WORK=$2 LABELS=$5
itksnap-wt -dssp-tickets-log "$TICKET" info "ASHS-style run started" \
           -dssp-tickets-set-progress "$TICKET" 0 0.1 1
WSFILE=$(itksnap-wt -dssp-tickets-download "$TICKET" "$WORK/input" | grep '^1>.*itksnap$' | awk '{print $2}')
T1=$(itksnap-wt -P -i "$WSFILE" -llf T1-MRI)
"$DSS_HOOK" progress 0.1 0.9 0.5
cp "$T1" "$WORK/right_hippo.nii.gz"
itksnap-wt -i "$WSFILE" -las "$WORK/right_hippo.nii.gz" -psn "Right hippocampus" \
           -labels-clear -labels-add "$LABELS" 100 "Right %s" -o "$WORK/final.itksnap"
itksnap-wt -dssp-tickets-log "$TICKET" info "Segmentation done" \
           -i "$WORK/final.itksnap" -dssp-tickets-upload "$TICKET" \
           -dssp-tickets-success "$TICKET"
