#!/bin/bash
# A provider's claim loop in the style of the DSS documentation's example: claim, download,
# find the T1 by tag, report, build the result workspace, upload, mark success.
# Usage: claim_loop.sh SERVICE_HASH PROVIDER WORKDIR LABEL_FILE
set -u
SERVICE=$1 PROVIDER=$2 WORKDIR=$3 LABELS=$4
while true; do
  # Claim the next ticket; the id is the second word of the "1>" line.
  TICKET=$(itksnap-wt -dssp-services-claim "$SERVICE" "$PROVIDER" instance1 | grep '^1>' | awk '{print $2}')
  if [[ -z "$TICKET" ]]; then
    echo "no more tickets"
    break
  fi
  TDIR=$WORKDIR/ticket_$(printf %08d "$TICKET")
  WSFILE=$(itksnap-wt -P -dssp-tickets-download "$TICKET" "$TDIR" | grep '\.itksnap$')
  T1=$(itksnap-wt -P -i "$WSFILE" -llf T1-MRI)
  if [[ -z "$T1" ]]; then
    itksnap-wt -dssp-tickets-fail "$TICKET" "The workspace has no layer tagged T1-MRI"
    continue
  fi
  itksnap-wt -dssp-tickets-set-progress "$TICKET" 0 1 0.2
  itksnap-wt -dssp-tickets-log "$TICKET" info "Segmenting $(basename "$T1")"
  cp "$T1" "$TDIR/segmentation.nii.gz"   # stands in for the real algorithm
  itksnap-wt -i "$WSFILE" -layers-add-seg "$TDIR/segmentation.nii.gz" \
    -props-set-nickname "Hippocampus" -labels-set "$LABELS" -o "$TDIR/result.itksnap" || exit 1
  itksnap-wt -dssp-tickets-set-progress "$TICKET" 0 1 1
  itksnap-wt -i "$TDIR/result.itksnap" -dssp-tickets-upload "$TICKET" || exit 1
  itksnap-wt -dssp-tickets-success "$TICKET"
done
