"""rushorder: an e-commerce order service built for flash-sale load."""
