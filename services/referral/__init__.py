"""referral: The SOP referral broker: pathways, guards, lifecycle, deadlines, delivery to case systems."""
