"""Location-awareness probes of a frozen backbone (``droppos probe``): the position probe and order sensitivity."""
